from auditclf.cli import main

main()
