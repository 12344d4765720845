"""UserError: bad input a user can fix. The CLI prints its message as one line and exits 2."""


class UserError(Exception):
    pass
