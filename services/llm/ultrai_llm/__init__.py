"""UltrAI llm service."""
