from queuectl_core.cli import main

main()
