from kizuna_consent.main import run

run()
