"""The model side of attnmap: registry, adapter interface, hook owner, model families."""
