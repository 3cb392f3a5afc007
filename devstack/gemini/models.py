"""The model names the offline server accepts, kept in one place.

An unknown name is refused with close code 1008, as the service does. The list is
the union of a static set (models the product or its tests name) and whatever the
installed livekit google plugin declares, read from its source so an upgraded plugin
extends the list without an edit here and without importing livekit at startup.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

# Extend here when a test or the product needs another name.
STATIC_MODELS: frozenset[str] = frozenset(
    {
        "gemini-2.5-flash-native-audio-preview-12-2025",
        "gemini-2.5-flash-native-audio-preview-09-2025",
        "gemini-2.5-flash-native-audio-latest",
        "gemini-live-2.5-flash-preview",
        "gemini-live-2.5-flash-native-audio",
        "gemini-2.0-flash-live-001",
        "gemini-2.0-flash-live-preview-04-09",
        "gemini-2.5-flash-preview-native-audio-dialog",
        "gemini-2.5-flash-exp-native-audio-thinking-dialog",
        "gemini-3.1-flash-live-preview",
        "gemini-3.8-live",
        "gemini-3.8-live-extended-thinking",
    }
)

_PLUGIN_NAMES = {"KNOWN_GEMINI_API_MODELS", "KNOWN_VERTEXAI_MODELS", "LiveAPIModels"}


def _strings_assigned(path: Path, names: set[str]) -> set[str]:
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if not any(isinstance(t, ast.Name) and t.id in names for t in targets):
            continue
        for sub in ast.walk(node.value):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                if sub.value.startswith("gemini"):
                    found.add(sub.value)
    return found


@functools.lru_cache(maxsize=1)
def plugin_models() -> frozenset[str]:
    """Model names declared by the installed livekit-plugins-google, if any."""
    try:
        spec = importlib.util.find_spec("livekit.plugins.google")
    except (ImportError, ValueError):
        return frozenset()
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    root = Path(list(spec.submodule_search_locations)[0]) / "realtime"
    names: set[str] = set()
    for file in ("realtime_api.py", "api_proto.py"):
        names |= _strings_assigned(root / file, _PLUGIN_NAMES)
    return frozenset(names)


def known_models(extra: frozenset[str] | set[str] = frozenset()) -> frozenset[str]:
    return STATIC_MODELS | plugin_models() | frozenset(extra)
