"""The spec: rules (SPEC.md), vectors, their parser, the runner and the `iohandler` command."""

if __name__ != "iohandler.specs":  # the folder specs/ is installed as iohandler.specs, its only name
    raise ImportError(f"import iohandler.specs, not {__name__}: one module, one name")
