from jobmanager.cli.main import main

main()
