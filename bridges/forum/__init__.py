"""The forum bridge: every topic is a Matrix room; its messages are the topic's comments."""
