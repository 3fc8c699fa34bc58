"""The wire contract: the request, the completion event, keys, signing, schema documents."""
