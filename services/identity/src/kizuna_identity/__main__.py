from kizuna_identity.main import run

run()
