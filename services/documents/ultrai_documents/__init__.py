"""UltrAI documents service."""
