SET GLOBAL read_only = ON;
SET GLOBAL super_read_only = ON;
