"""Test stand-ins that run as programs: a fake ``docker`` CLI and a vLLM stand-in."""
