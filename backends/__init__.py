"""The backends that ship with rnnspec, each a plugin like a third party's."""

__all__: list[str] = []
