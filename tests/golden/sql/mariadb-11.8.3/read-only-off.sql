SET GLOBAL read_only = OFF;
