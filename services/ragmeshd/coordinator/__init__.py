"""The coordinator service: context augmentation, local/remote language-model routing,
interactions and feedback."""
