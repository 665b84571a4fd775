"""What several test modules share: running the console scripts, reading and writing the files a run makes,
small trained runs. (Fixtures live in conftest.py.)"""
