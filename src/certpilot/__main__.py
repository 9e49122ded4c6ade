from certpilot.cli.main import run

run()
