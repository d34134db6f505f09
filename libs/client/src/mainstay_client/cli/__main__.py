from mainstay_client.cli import main

main()
