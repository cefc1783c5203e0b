"""sendmail's command-line grammar, parsed by hand (getopt-style, permuting).

See docs/sendmail-options.md for the table of options: which are acted on,
which are accepted and ignored because callers pass them and cannot be changed.
"""

from __future__ import annotations

# Flags that take no value. t, i and I (= -bi) are acted on; the rest are ignored.
# Together with VALUED this is Postfix's sendmail option set, plus -s.
FLAGS = frozenset("tivGUnmscxI")
# Options that take a value, attached (-fADDR) or as the next argument (-f ADDR).
VALUED = frozenset("frFoBNRVLOCXhpAe")
MODES = {"m": "deliver", "p": "list", "s": "smtp", "i": "aliases"}


class UsageError(Exception):
    """A command line that sendmail's grammar does not accept (exit 64)."""


class Invocation:
    """What the command line asked for."""

    __slots__ = (
        "extract",
        "flush",
        "fullname",
        "ignore_dots",
        "mode",
        "recipients",
        "sender",
        "show_help",
        "show_version",
        "verbose",
    )

    def __init__(self) -> None:
        self.mode = "deliver"
        self.extract = False
        self.ignore_dots = False
        self.verbose = False
        self.flush = False
        self.sender: str | None = None
        self.fullname: str | None = None
        self.recipients: list[str] = []
        self.show_help = False
        self.show_version = False


def _normalise_sender(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value


def _apply_o(inv: Invocation, value: str) -> None:
    # -oi (IgnoreDots) is the only -o option with meaning here; -oem, -odq,
    # -oee, -om, -oo … are about error modes and delivery modes of a real MTA.
    if value == "i":
        inv.ignore_dots = True


def _apply_capital_o(inv: Invocation, value: str) -> None:
    name, _, setting = value.partition("=")
    if name.strip().lower() == "ignoredots" and setting.strip().lower() in ("", "true", "t", "yes"):
        inv.ignore_dots = True


def _apply_valued(inv: Invocation, opt: str, value: str) -> None:
    if opt in "fr":
        inv.sender = _normalise_sender(value)
    elif opt == "F":
        inv.fullname = value
    elif opt == "o":
        _apply_o(inv, value)
    elif opt == "O":
        _apply_capital_o(inv, value)
    # B (body type), N (DSN notify), R (DSN return), V (envid), L (log label),
    # C (config file), X (log file), h (hop count), p (protocol), A (submission
    # mode, -Am/-Ac), e (error mode, as -oe): ignored.


def _apply_mode(inv: Invocation, mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unsupported mode {_shown('-b' + mode)} (supported: -bm, -bp, -bs, -bi)")
    inv.mode = MODES[mode]


def _shown(option: str) -> str:
    """The option as it can be shown on one short line."""
    option = option if len(option) <= 40 else option[:40] + "..."
    return option if option.isprintable() else repr(option)


def parse(args: list[str]) -> Invocation:
    """Parse argv[1:]. Options are honoured anywhere before '--' (GNU permutation)."""
    inv = Invocation()
    i = 0
    n = len(args)
    while i < n:
        arg = args[i]
        i += 1
        if arg == "--":
            inv.recipients.extend(args[i:])
            break
        if arg == "--help":
            inv.show_help = True
            continue
        if arg == "--version":
            inv.show_version = True
            continue
        if len(arg) < 2 or not arg.startswith("-"):
            inv.recipients.append(arg)
            continue
        if arg.startswith("--"):
            raise UsageError(f"unknown option {_shown(arg)}")
        k = 1
        while k < len(arg):
            opt = arg[k]
            rest = arg[k + 1 :]
            if opt in FLAGS:
                if opt == "t":
                    inv.extract = True
                elif opt == "i":
                    inv.ignore_dots = True
                elif opt == "v":
                    inv.verbose = True
                elif opt == "I":
                    inv.mode = MODES["i"]
                k += 1
            elif opt == "b":
                if not rest:
                    raise UsageError("option -b needs a mode, e.g. -bm, -bs or -bp")
                _apply_mode(inv, rest)
                break
            elif opt == "q":
                # -q, -q30m, -qf…: flush the queue; never takes the next argument.
                inv.flush = True
                break
            elif opt in VALUED:
                if rest:
                    value = rest
                elif i < n:
                    value = args[i]
                    i += 1
                else:
                    raise UsageError(f"option -{opt} needs a value")
                _apply_valued(inv, opt, value)
                break
            else:
                raise UsageError(f"unknown option {_shown('-' + opt)}")
    return inv
