"""The seed (`langlearn seed`): realistic, consistent, reproducible data, from a demo to millions of rows."""
