"""rmsmp.boards"""
