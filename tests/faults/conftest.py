from tests.e2e.conftest import (  # noqa: F401  (fixtures shared with the e2e tests)
    desks,
    homeserver,
    people,
    pg_desks,
    sqlite_desks,
)
