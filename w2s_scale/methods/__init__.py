"""Weak-to-strong methods behind one contract (docs/methods.md#writing-a-method).

A method's package imports what it needs from here:

    from w2s_scale.methods import MethodContext, MethodResult
"""
from w2s_scale.methods.contract import (Anchors, Method, MethodContext, MethodResult, Student,
                                        UnlabelledSet)

__all__ = ["Anchors", "Method", "MethodContext", "MethodResult", "Student", "UnlabelledSet"]
