from asu_ci.cli import main

main()
