"""A plain module (no durable functions) with a class a test makes serializable only in its own process."""


class Token:
    def __init__(self, text: str) -> None:
        self.text = text
