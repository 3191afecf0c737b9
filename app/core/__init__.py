"""The pure core: value types, the error tree and the math. Imports neither Flask nor torch."""
