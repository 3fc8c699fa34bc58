"""AWS: clients, the request queue, storage, the publisher, queue helpers, model artefacts."""
