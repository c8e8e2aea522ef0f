"""Shared fixtures live in plugin modules, loaded here for the whole suite."""

pytest_plugins = ["tests.fix_db", "tests.fix_kafka", "tests.fix_cluster", "tests.http_server"]
