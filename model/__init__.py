"""The pure model of the loop: rules as a state machine (specs/SPEC.md)."""

if __name__ != "iohandler.model":  # the folder model/ is installed as iohandler.model, its only name
    raise ImportError(f"import iohandler.model, not {__name__}: one module, one name")
