"""The package face's lazy attributes: public names resolved on first access, so importing the
package (and starting the CLI) costs no torch import until something needs one."""

from __future__ import annotations

import importlib
import sys
import types


class LazyPackage(types.ModuleType):
    """A package whose ``public`` names (name -> (module, attribute or None)) load on first use.
    A public name that is also a submodule's name keeps its public value when that submodule is
    imported (the import system would otherwise set the attribute to the module)."""

    public: dict[str, tuple[str, str | None]]

    def __getattr__(self, name: str):
        public = self.__dict__.get("public", {})
        if name not in public:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module_name, attribute = public[name]
        module = importlib.import_module(f".{module_name}", self.__name__)
        value = module if attribute is None else getattr(module, attribute)
        self.__dict__[name] = value
        return value

    def __dir__(self):
        return sorted(set(self.__dict__) | set(self.__dict__.get("public", {})))

    def __setattr__(self, name, value):
        public = self.__dict__.get("public", {})
        if isinstance(value, types.ModuleType) and name in public and public[name][1] is not None:
            return
        super().__setattr__(name, value)


def install(package: str, public: dict[str, tuple[str, str | None]]) -> None:
    """Make the package ``package`` (its ``__init__`` calls this) lazy over ``public``."""
    module = sys.modules[package]
    module.__class__ = LazyPackage
    module.__dict__["public"] = public
