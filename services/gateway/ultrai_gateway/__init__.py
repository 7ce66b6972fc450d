"""UltrAI gateway: the one URL the frontend uses."""
