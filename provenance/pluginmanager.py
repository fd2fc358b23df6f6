"""Loading plugins and collecting their detectors.

Every plugin, built-in or third-party, arrives through the entry-point group
``provenance.plugins``; the built-in detectors are entry points of this
distribution, so they take exactly the path a third party's do. A fresh
manager is built per run (and per test): nothing loads at import time.

Environment switches:
  PROVENANCE_LOAD_PLUGINS   comma-separated plugin (entry-point) or distribution
                            names: load only these third-party plugins ('' loads
                            none). Built-ins always load. The escape hatch when a
                            broken plugin stops the CLI from starting.
  PROVENANCE_TRACE_PLUGINS  set to 1: print every hook call and result, and every
                            detector call of a tag run, to stderr.
  PROVENANCE_PLUGIN_MODULES comma-separated modules or .py files to load as
                            one-off plugins (like ``--plugin-module``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from dataclasses import dataclass
from importlib.metadata import entry_points

import pluggy

from provenance import hookspecs
from provenance.detectors import Detector, DetectorError, check_detector_class

ENTRY_POINT_GROUP = "provenance.plugins"
HOST_DISTRIBUTION = "provenance-guard"


class PluginLoadError(RuntimeError):
    """A plugin that cannot be loaded: names the entry point and its distribution."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    distribution: str | None
    builtin: bool
    module: str


@dataclass(frozen=True)
class DetectorSpec:
    """A registered detector class and the plugin it came from."""

    cls: type[Detector]
    plugin: PluginInfo

    @property
    def name(self) -> str:
        return self.cls.name


class ProvenancePluginManager(pluggy.PluginManager):
    def __init__(self):
        super().__init__("provenance")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def register_plugin(self, module, name: str, version: str, distribution: str | None,
                        builtin: bool = False) -> None:
        """Register a module (or any object with hookimpls) as plugin ``name``, checking its hooks.

        A hook implementation whose arguments are not in the spec is refused
        here, with a message naming the plugin; so is a name already taken.
        """
        if self.has_plugin(name):
            other = self.infos.get(name)
            raise PluginLoadError(f"plugin name {name!r} ({distribution or 'unpackaged'}) is already taken by "
                                  f"{(other.distribution or other.module) if other else 'another plugin'}")
        try:
            self.register(module, name=name)
        except pluggy.PluginValidationError as exc:
            message = " ".join(str(exc).split())
            raise PluginLoadError(f"plugin {name!r} ({distribution or 'unpackaged'}) has a hook "
                                  f"implementation that does not match its spec: {message}") from None
        except ValueError as exc:  # the same module already registered under another name
            raise PluginLoadError(f"plugin {name!r} ({distribution or 'unpackaged'}): {exc}") from None
        module_name = getattr(module, "__name__", None) or type(module).__module__
        module_name = module_name.removeprefix(PLUGIN_FILE_PREFIX)  # a .py file: shown by its own name
        self.infos[name] = PluginInfo(name, version, distribution, builtin, module_name)

    def check_hooks(self) -> None:
        """Refuse hook implementations with no spec (a misspelled hook name), naming the plugin."""
        known = sorted(name for name in dir(hookspecs) if getattr(getattr(hookspecs, name), "provenance_spec", None))
        for name in dir(self.hook):
            caller = getattr(self.hook, name)
            if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if getattr(impl, "optionalhook", False):
                    continue
                raise PluginLoadError(f"plugin {impl.plugin_name!r} implements unknown hook {name!r} "
                                      f"(a misspelled hook name?); known hooks: {', '.join(known)}")
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(f"{exc} (a misspelled hook name?)") from None

    def hook_names(self) -> list[str]:
        """Every hook in the spec (provenance.hookspecs)."""
        callers = {name: getattr(self.hook, name) for name in dir(self.hook)}
        return sorted(name for name, c in callers.items() if isinstance(c, pluggy.HookCaller) and c.has_spec())

    def unregister_plugin(self, name: str) -> None:
        """Remove plugin ``name`` (test fixtures register a plugin for one test, then remove it)."""
        if self.has_plugin(name):
            self.unregister(name=name)
        self.infos.pop(name, None)

    def plugin_infos(self) -> list[PluginInfo]:
        return sorted(self.infos.values(), key=lambda i: (not i.builtin, i.name))

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.get_plugin(name)
        return sorted(caller.name for caller in self.get_hookcallers(plugin) or [])

    def detectors(self) -> dict[str, DetectorSpec]:
        """Every detector, by name, attributed to the plugin that registered it.

        Each plugin's hook implementation is called on its own so the core knows
        which plugin registered what; two plugins registering one name is an error.
        """
        found: dict[str, DetectorSpec] = {}
        for impl in self.hook.register_detectors.get_hookimpls():
            info = self.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "0", None, False, "")

            def register(cls, _info=info):
                try:
                    check_detector_class(cls)
                except DetectorError as exc:
                    raise PluginLoadError(f"plugin {_info.name!r}: {exc}") from None
                if cls.name in found and found[cls.name].cls is not cls:
                    other = found[cls.name].plugin.name
                    raise PluginLoadError(f"detector name {cls.name!r} is registered by both plugin "
                                          f"{other!r} and plugin {_info.name!r}; detector names key stored tags, "
                                          "so they must be unique (rename one, or disable a plugin with "
                                          "PROVENANCE_LOAD_PLUGINS)")
                found[cls.name] = DetectorSpec(cls, _info)
                _trace(f"register_detectors: plugin {_info.name} registered {cls.name} v{cls.version}")

            kwargs = {"register": register} if "register" in impl.argnames else {}
            _trace(f"register_detectors -> plugin {info.name}")
            try:
                impl.function(**kwargs)
            except PluginLoadError:
                raise
            except Exception as exc:
                raise PluginLoadError(f"plugin {info.name!r}: register_detectors raised "
                                      f"{type(exc).__name__}: {exc}") from exc
        return dict(sorted(found.items()))


def _trace(message: str) -> None:
    if os.environ.get("PROVENANCE_TRACE_PLUGINS"):
        print(f"[trace] {message}", file=sys.stderr, flush=True)


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _wanted_third_party() -> set[str] | None:
    value = os.environ.get("PROVENANCE_LOAD_PLUGINS")
    if value is None:
        return None
    return {_normalize(name) for name in value.split(",") if name.strip()}


def get_plugin_manager(load_entrypoints: bool = True, third_party: bool = True) -> ProvenancePluginManager:
    """A fresh manager with every installed plugin registered and checked.

    ``third_party=False`` loads the built-ins only (as PROVENANCE_LOAD_PLUGINS=''
    does); ``load_entrypoints=False`` loads nothing at all.
    """
    pm = ProvenancePluginManager()
    if load_entrypoints:
        wanted = _wanted_third_party() if third_party else set()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            builtin = dist_name == HOST_DISTRIBUTION
            if not builtin and wanted is not None and not {_normalize(ep.name), _normalize(dist_name or "")} & wanted:
                _trace(f"skipping plugin {ep.name} ({dist_name}): not in PROVENANCE_LOAD_PLUGINS")
                continue
            if pm.has_plugin(ep.name):
                other = pm.infos[ep.name].distribution
                raise PluginLoadError(f"plugin name {ep.name!r} is claimed by both {other} and {dist_name}; "
                                      "uninstall one, or pick one with PROVENANCE_LOAD_PLUGINS")
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {ep.name!r} from {dist_name or 'unknown distribution'} failed to import "
                    f"({ep.value}): {type(exc).__name__}: {exc}. "
                    "Set PROVENANCE_LOAD_PLUGINS to the plugins you want to skip it."
                ) from exc
            pm.register_plugin(module, ep.name, dist.version if dist is not None else "0", dist_name, builtin)
            _trace(f"loaded plugin {ep.name} {dist.version if dist is not None else '0'} ({dist_name}) "
                   f"from {ep.value}")
    pm.check_hooks()
    if os.environ.get("PROVENANCE_TRACE_PLUGINS"):
        def before(hook_name, hook_impls, kwargs):
            print(f"[trace] {hook_name} -> {[i.plugin_name for i in hook_impls]} {sorted(kwargs)}", file=sys.stderr)

        def after(outcome, hook_name, hook_impls, kwargs):
            if outcome.exception is not None:
                print(f"[trace] {hook_name} raised {outcome.exception!r}", file=sys.stderr)
            else:
                print(f"[trace] {hook_name} returned {outcome.get_result()!r}", file=sys.stderr)

        pm.add_hookcall_monitoring(before, after)
    return pm


def load_plugin_modules(pm: ProvenancePluginManager, modules) -> None:
    """Register one-off plugins from importable module names or .py files (like datasette --plugins-dir).

    Also reads PROVENANCE_PLUGIN_MODULES (comma-separated). The plugin's name is
    the module's (a file's name without .py) and its version the module's ``__version__`` (or "0").
    """
    import importlib

    names = list(modules or [])
    env = os.environ.get("PROVENANCE_PLUGIN_MODULES")
    if env:
        names.extend(m.strip() for m in env.split(",") if m.strip())
    for ref in names:
        if ref.endswith(".py") and not Path(ref).is_file():
            raise PluginLoadError(f"plugin module file {ref!r} not found (give a .py file or an importable module)")
        try:
            module = _load_plugin_file(Path(ref)) if ref.endswith(".py") else importlib.import_module(ref)
        except Exception as exc:
            raise PluginLoadError(f"plugin module {ref!r} failed to import: {type(exc).__name__}: {exc}") from exc
        name = Path(ref).stem if ref.endswith(".py") else module.__name__.rsplit(".", 1)[-1]
        if pm.has_plugin(name) and pm.get_plugin(name) is module:
            continue
        pm.register_plugin(module, name, str(getattr(module, "__version__", "0")), None)
        _trace(f"loaded plugin module {name} from {ref}")
    if names:
        pm.check_hooks()


PLUGIN_FILE_PREFIX = "provenance_plugin_file_"


def _load_plugin_file(path: Path):
    """Import a plugin from a .py file under a private module name.

    Its own name would do harm: a file called json.py or email.py, registered in
    sys.modules as 'json', would replace the standard module for everything that
    imports it afterwards. The plugin is still named after the file (path.stem).
    """
    import importlib.util

    module_name = PLUGIN_FILE_PREFIX + path.stem
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path.resolve()):
        return loaded  # the same file, named twice (e.g. flag and PROVENANCE_PLUGIN_MODULES)
    spec = importlib.util.spec_from_file_location(module_name, path.resolve())
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # while it runs too: dataclasses and pickling look modules up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def plugin_listing(pm: ProvenancePluginManager) -> list[dict]:
    """Every plugin with its version, distribution, hooks and detectors (for `provenance plugins`)."""
    detectors = pm.detectors()
    out = []
    for info in pm.plugin_infos():
        mine = [s for s in detectors.values() if s.plugin.name == info.name]
        out.append({
            "name": info.name, "version": info.version, "distribution": info.distribution,
            "builtin": info.builtin, "module": info.module, "hooks": pm.hooks_of(info.name),
            "categories": sorted({s.cls.category for s in mine}),
            "detectors": [{"name": s.name, "version": s.cls.version, "category": s.cls.category,
                           "corpus_level": s.cls.corpus_level, "needs": list(s.cls.needs),
                           "options": s.cls.options, "doc": _first_line(s.cls.__doc__)}
                          for s in mine],
        })
    return out


def _first_line(doc: str | None) -> str | None:
    lines = [line.strip() for line in (doc or "").strip().splitlines()]
    return lines[0] if lines and lines[0] else None
