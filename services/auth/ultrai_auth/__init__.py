"""UltrAI auth service."""
