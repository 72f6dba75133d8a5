"""Test harness shared by the integration tests, the demo and the benchmark.

hosts    -- local test hosts made of Linux namespaces, each with its own sshd and Nix store
systems  -- NixOS-compatible fixture systems built with real nix-build
ansible  -- running ansible and ansible-playbook against the test hosts
"""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
