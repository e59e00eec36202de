"""The public web pages: signup, confirmation, unsubscribe and preferences."""
