"""The node's own web app (a PWA): market, personal notes, community, guardians, node status.

``server`` is the service entry point started by ``mycelium run``; ``app`` the Starlette
routes; ``auth`` the sans-IO sign-in/session/CSRF core; ``forms`` and ``i18n`` the form
parsing and languages. Templates and static assets ship inside this package.
"""
