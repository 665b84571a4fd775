"""What several test modules share, unit and e2e alike: running the console scripts, reading and writing the files
a run makes, small trained runs, sweeps, signals at a chosen step, a stand-in scontrol, the CUDA tests' settings,
a config error's key and value. (Fixtures live in conftest.py.)"""
