from __future__ import annotations

import argparse

from trapline.server.security import hash_token, new_token, tokens_match


def test_tokens_never_look_like_a_command_line_option() -> None:
    # before: one token in 64 began with "-" and `--token <it>` was refused by argparse
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--token")
    tokens = [new_token() for _ in range(2000)]
    assert not any(t.startswith("-") for t in tokens)
    assert all(parser.parse_args(["--token", t]).token == t for t in tokens[:200])
    assert len(set(tokens)) == len(tokens) and min(map(len, tokens)) >= 43  # 32 random bytes


def test_a_token_matches_only_its_own_hash() -> None:
    token = new_token()
    assert tokens_match(token, hash_token(token))
    assert not tokens_match(new_token(), hash_token(token))
