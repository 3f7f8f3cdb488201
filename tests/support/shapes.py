"""The ASU answer bodies as PROTOCOL.md writes them ("Build endpoint", "Responses"):
the keys each body must carry. The protocol module's tests and the build job's tests
check what they produce against these."""

from __future__ import annotations

QUEUED_KEYS = {"status", "request_hash", "detail", "imagebuilder_status", "queue_position"}
BUILDING_KEYS = QUEUED_KEYS - {"queue_position"}
FAILED_KEYS = {"status", "detail", "stdout", "stderr", "imagebuilder_status"}
ERROR_KEYS = {"status", "detail"}
BUILT_KEYS = {
    # the profiles.json fields of the target merged with the profile's entry
    "target",
    "version_number",
    "version_code",
    "arch_packages",
    "default_packages",
    "titles",
    "images",
    "image_prefix",
    "supported_devices",
    "device_packages",
    "metadata_version",
    # this build
    "id",
    "bin_dir",
    "request_hash",
    "build_at",
    "manifest",
    "build_cmd",
    "request",
    "status",
    "detail",
}
IMAGE_KEYS = {"name", "type", "filesystem", "sha256", "sha256_unsigned"}
