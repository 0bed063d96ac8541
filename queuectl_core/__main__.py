from queuectl_core.entry import main

main()
