SET GLOBAL super_read_only = OFF;
SET GLOBAL super_read_only = ON;
