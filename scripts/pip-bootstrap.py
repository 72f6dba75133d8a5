"""Stands in for the pip bootstrap script that ansible-test downloads from its own server.

ansible-test creates an empty venv for each sanity test and runs this file in it with pip's
install arguments (`--disable-pip-version-check pip==X --no-setuptools --no-wheel`). That server
is not reachable from machines that only reach the package registries, so this takes pip from
Python's bundled ensurepip and then installs the requested version from the package index.
"""
import subprocess
import sys

IGNORED = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q"] + [a for a in sys.argv[1:] if a not in IGNORED])
