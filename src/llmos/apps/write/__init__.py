"""The writing assistant: spelling correction, material suggestions, continuation."""
