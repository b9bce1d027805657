"""The harness: drives fake accounts against a gateway and judges the result."""
