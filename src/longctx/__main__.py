from longctx.cli import main

main()
