"""The customer-service app: knowledge bases of FAQ pairs and their hybrid search."""
