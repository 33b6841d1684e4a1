"""Alert rules, their evaluation, and the notifications they send (webhooks, e-mail) with the
outbound-address check.
"""
