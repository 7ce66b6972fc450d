"""The package every UltrAI core service installs: the conventions of docs/architecture.md in one place."""

__version__ = "0.1.0"
