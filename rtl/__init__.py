"""rmsmp.rtl"""
