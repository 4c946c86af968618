from kizuna_profilesync.main import run

run()
