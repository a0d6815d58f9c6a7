SET GLOBAL gtid_slave_pos = '0-1-1234';
