"""Test infrastructure that ships with herald: fake providers speaking the real wire APIs.

Tests drive the real vendor SDKs against these fakes, and the local demo
stack runs them standalone instead of the vendors' services.
"""
