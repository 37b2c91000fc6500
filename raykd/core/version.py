"""raykd's version (``raykd.__version__``), which the engine records in every result: it sits
on the floor so that the engine need not import the package's root."""

__version__ = "0.1.0"
