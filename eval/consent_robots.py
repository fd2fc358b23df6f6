"""Share of real sites whose robots.txt disallows each well-known AI agent from fetching ``/``.

A sanity check of how robots.txt rules for AI agents are read, on a real
distribution: ../shared/data/robots-sitemaps holds the robots.txt files of a few
hundred popular sites (Protego's test data; one file per host, named after it).
Each file is parsed with Protego, the parser Scrapy's RobotsTxtMiddleware uses,
decoded as Scrapy decodes it (UTF-8, undecodable bytes dropped), and asked
``can_fetch("https://<host>/", agent)`` for every agent of the one list
(``provenance.plugins.consent.AI_AGENTS``, or ``--agents``).

For each agent it prints how many sites disallow it, how many of those do so
*by name* (the agent is refused while an agent no file names,
``provenance-eval-unnamed``, is allowed, so a blanket ``User-agent: *``
``Disallow: /`` does not count there) and how many allow it by name where the
unnamed agent is refused. Protego picks the group whose ``User-agent`` is a
substring of the agent's name, so a ``User-agent: Google`` group also governs
``Google-Extended``.

    .venv/bin/python eval/consent_robots.py [--data DIR] [--agents GPTBot,CCBot,...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from protego import Protego

from provenance.plugins.consent import AI_AGENTS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "robots-sitemaps" / "scrapy__protego" / \
    "tests" / "test_data"
UNNAMED = "provenance-eval-unnamed"


def robots_files(data: Path) -> list[Path]:
    """One robots.txt per host: the files named like a host name."""
    return sorted(p for p in data.iterdir() if p.is_file() and "." in p.name and not p.name.startswith("."))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="directory of robots.txt files named by host")
    parser.add_argument("--agents", help="comma-separated agent names (default: the consent detector's AI_AGENTS)")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"consent_robots: {args.data}: not found; give --data DIR (a directory of robots.txt files)",
              file=sys.stderr)
        return 2
    agents = [a.strip() for a in args.agents.split(",") if a.strip()] if args.agents else list(AI_AGENTS)
    files = robots_files(args.data)
    disallowed = dict.fromkeys(agents, 0)
    by_name = dict.fromkeys(agents, 0)
    allowed_by_name = dict.fromkeys(agents, 0)
    blanket = named_any = 0
    for path in files:
        host = path.name
        rp = Protego.parse(path.read_bytes().decode("utf-8", errors="ignore"))
        url = f"https://{host}/"
        unnamed_ok = rp.can_fetch(url, UNNAMED)
        blanket += not unnamed_ok
        named_here = False
        for agent in agents:
            if not rp.can_fetch(url, agent):
                disallowed[agent] += 1
                if unnamed_ok:
                    by_name[agent] += 1
                    named_here = True
            elif not unnamed_ok:
                allowed_by_name[agent] += 1
        named_any += named_here
    n = len(files)
    print(f"robots.txt files: {n} ({args.data})")
    print(f"sites disallowing / to every unnamed agent (User-agent: *): {blanket} ({blanket / n:.1%})")
    print(f"sites disallowing / to at least one AI agent by name: {named_any} ({named_any / n:.1%})\n")
    print(f"{'agent':<20} {'disallowed /':>12} {'share':>7} {'by name':>8} {'share':>7} {'allowed by name':>16}")
    for agent in agents:
        print(f"{agent:<20} {disallowed[agent]:>12} {disallowed[agent] / n:>7.1%} {by_name[agent]:>8} "
              f"{by_name[agent] / n:>7.1%} {allowed_by_name[agent]:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
