from queuectl_core.cli.main import main

main()
